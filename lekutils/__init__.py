"""lekutils: the logic behind the LEK curriculum workbook notebooks."""

__version__ = "0.1.0"
