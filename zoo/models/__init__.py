"""Importing this package registers every zoo architecture with timm."""
