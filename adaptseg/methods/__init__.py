"""adaptseg.methods"""
