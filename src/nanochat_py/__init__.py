"""nanochat-py: load and run every nanochat checkpoint, exactly and fast. See README.md."""

from .chatbot import Chatbot, Piece
from .checkpoint import save_checkpoint
from .config import ModelConfig
from .errors import CheckpointError, ConversationError, NanochatError, UnsafeFileError
from .loader import load
from .tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "Chatbot",
    "CheckpointError",
    "ConversationError",
    "ModelConfig",
    "NanochatError",
    "Piece",
    "Tokenizer",
    "UnsafeFileError",
    "load",
    "load_tokenizer",
    "save_checkpoint",
]
__version__ = "0.1.0"
