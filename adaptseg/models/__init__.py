"""adaptseg.models"""
