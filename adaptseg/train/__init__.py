"""adaptseg.train"""
