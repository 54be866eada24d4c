"""Search spaces: the ``SearchSpace`` contract, the nb201 and attn spaces, and the name registry."""
from .attn import AttnSpace
from .base import (SearchSpace, SequenceSpace, get_space, known_spaces, register_space, state_nbytes,
                   unregister_space)
from .nb201 import NB201Index, NB201Space

register_space("nb201", NB201Space)
register_space("attn", AttnSpace)

__all__ = ["AttnSpace", "NB201Index", "NB201Space", "SearchSpace", "SequenceSpace", "get_space",
           "known_spaces", "register_space", "state_nbytes", "unregister_space"]
