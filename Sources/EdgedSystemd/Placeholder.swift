// EdgedSystemd: placeholder until its first type lands.
