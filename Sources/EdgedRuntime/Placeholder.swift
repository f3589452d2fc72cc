// EdgedRuntime: placeholder until its first type lands.
