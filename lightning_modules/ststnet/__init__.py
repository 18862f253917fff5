from .lightning_model import STSTNet
from .torch_model import STSTNetModel

__all__ = ["STSTNet", "STSTNetModel"]
