// EdgedTunnel: the Konnectivity agent (dials out from the node) and the tunnel server (cloud side).
//
// Both ends speak AgentService.Connect (one bidirectional gRPC stream of Packets per agent and server instance) and
// carry many TCP streams over it. Files: `TunnelAgent` (+Connection) is the node side, `TunnelServer` (+Frontend,
// +Agents) the cloud side with its HTTP CONNECT frontend; `PacketOutbox` and `StreamRelay` are the shared plumbing
// (one outbound queue per gRPC stream with per-stream accounting, one relay per TCP stream).
