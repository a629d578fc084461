from apitwin.cli import main

raise SystemExit(main())
