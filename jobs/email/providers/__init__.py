"""Email providers: one module each, behind the contract of base.py."""
