"""adaptseg.eval"""
