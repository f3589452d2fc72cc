// The body of a streamed response, as an async sequence of chunks.

import NIOCore

/// Chunks of one response body as they arrive. Reading pulls data from the socket: while the caller does not ask,
/// the connection stops reading (back-pressure). Valid only inside the `HTTPClient.stream` call that made it.
public struct HTTPBodyStream: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer

    let connection: HTTPConnection
    let generation: Int

    public struct AsyncIterator: AsyncIteratorProtocol {
        let connection: HTTPConnection
        let generation: Int
        var done = false

        /// The next chunk, nil at the end of the body.
        ///
        /// - Throws: `HTTPError` `.timeout` (idle timeout), `.cancelled`, `.closed` (connection lost mid-body), `.tls`.
        public mutating func next() async throws -> ByteBuffer? {
            guard !done else { return nil }
            let chunk = try await connection.next(generation: generation)
            if chunk == nil { done = true }
            return chunk
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(connection: connection, generation: generation)
    }

    /// Reads the rest of the body into one array.
    ///
    /// - Throws: `HTTPError.bodyTooLarge` past `maxBytes` (the connection is then closed), or what `next` throws.
    public func collect(upTo maxBytes: Int) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        for try await chunk in self {
            guard bytes.count + chunk.readableBytes <= maxBytes else {
                let error = HTTPError(.bodyTooLarge, "the response body from \(connection.key.host):\(connection.key.port) is larger than \(maxBytes) bytes")
                connection.fail(error)
                throw error
            }
            bytes.append(contentsOf: chunk.readableBytesView)
        }
        return bytes
    }
}
