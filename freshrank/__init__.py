"""freshrank keeps an e-commerce ranking model fresh as daily increments arrive."""

__version__ = "0.1.0"
