// EdgedControl: placeholder until its first type lands.
