"""adaptseg.export"""
