"""apitwin: a working twin of a partner platform, served from its OpenAPI spec."""

from apitwin.errors import ApitwinError, ConfigError, NotFoundError, SpecError

__version__ = "0.1.0"

__all__ = ["ApitwinError", "ConfigError", "NotFoundError", "SpecError", "__version__"]
