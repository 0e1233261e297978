"""The Feast feature repository of freshrank (`feast apply` reads features.py here)."""
