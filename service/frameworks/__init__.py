from service.frameworks.registry import (
    Framework,
    FrameworkError,
    load_frameworks,
)

__all__ = ["Framework", "FrameworkError", "load_frameworks"]
