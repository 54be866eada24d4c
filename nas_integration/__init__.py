"""Regularized-evolution NAS driver, search spaces and data loaders that use the tensorcache."""
