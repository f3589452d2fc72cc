// Small constructors for the Konnectivity packets, so call sites read like the protocol.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore

extension KonnPacket {
    static func dialRequest(random: Int64, address: String) -> KonnPacket {
        var p = KonnPacket()
        p.type = .dialReq
        p.dialRequest = .with { $0.protocol = "tcp"; $0.address = address; $0.random = random }
        return p
    }

    static func dialResponse(random: Int64, connectID: Int64 = 0, error: String = "") -> KonnPacket {
        var p = KonnPacket()
        p.type = .dialRsp
        p.dialResponse = .with { $0.random = random; $0.connectID = connectID; $0.error = error }
        return p
    }

    static func data(_ connectID: Int64, _ bytes: ByteBuffer) -> KonnPacket {
        var p = KonnPacket()
        p.type = .data
        p.data = .with { $0.connectID = connectID; $0.data = Data(bytes.readableBytesView) }
        return p
    }

    static func closeRequest(_ connectID: Int64) -> KonnPacket {
        var p = KonnPacket()
        p.type = .closeReq
        p.closeRequest = .with { $0.connectID = connectID }
        return p
    }

    static func closeResponse(_ connectID: Int64, error: String = "") -> KonnPacket {
        var p = KonnPacket()
        p.type = .closeRsp
        p.closeResponse = .with { $0.connectID = connectID; $0.error = error }
        return p
    }

    static func closeDial(random: Int64) -> KonnPacket {
        var p = KonnPacket()
        p.type = .dialCls
        p.closeDial = .with { $0.random = random }
        return p
    }

    static func drain() -> KonnPacket {
        var p = KonnPacket()
        p.type = .drain
        p.drain = KonnDrain()
        return p
    }
}
