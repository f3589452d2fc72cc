// EdgedImages: placeholder until its first type lands.
