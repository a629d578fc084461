"""Example partner specs bundled with apitwin (data files; see each folder's README)."""
