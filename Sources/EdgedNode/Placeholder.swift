// EdgedNode: placeholder until its first type lands.
