"""Native kernels: oneDNN convolutions for XLA's CPU backend (``conv_onednn.cc``).

``python -m jaxvis.native.build`` compiles them into ``LIBRARY``; ``jaxvis.conv`` loads them from there.
"""

from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "conv_onednn.cc"
LIBRARY = SOURCE.with_name("_conv_onednn.so")
