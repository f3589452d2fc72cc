print("edged: not yet implemented")
