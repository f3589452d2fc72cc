// EdgedDaemon: placeholder until its first type lands.
