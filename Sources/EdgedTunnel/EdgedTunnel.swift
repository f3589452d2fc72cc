// EdgedTunnel: the Konnectivity agent (dials out from the node) and the tunnel server (cloud side).
