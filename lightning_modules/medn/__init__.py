from .lightning_model import MEDN
from .torch_model import MEDNModel

__all__ = ["MEDN", "MEDNModel"]
