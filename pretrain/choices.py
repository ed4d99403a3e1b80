"""Base class of the enumerated settings in configs."""

from enum import Enum


class Choice(str, Enum):
    """A config choice that prints and interpolates as its plain value (``clm``, not
    ``ObjectiveName.clm``), e.g. in ``run_dir: runs/${model.name}-${objective.name}``."""

    def __str__(self) -> str:
        return self.value
