"""adaptseg.infer"""
