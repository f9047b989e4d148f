"""LightningDataModules: bundled digits, affine digits, ImageNet / ImageFolder trees, LRA tasks."""
