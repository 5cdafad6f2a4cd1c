"""adaptseg.data"""
