"""Reading and writing images, masks and tables, and their checks: the one place that touches files."""
