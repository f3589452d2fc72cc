/// An error from the tunnel agent or server; the message names the server, agent or destination involved.
public struct TunnelError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
