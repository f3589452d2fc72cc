import EdgedNetwork
import Testing

@Suite struct CNIResultTests {
    @Test func currentResultKeepsPodSideAddressesIPv4First() throws {
        let text = """
            {"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:01"},{"name":"veth1"},
             {"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/run/netns/x"}],
             "ips":[{"interface":2,"address":"fd00::5/64"},{"interface":0,"address":"10.9.0.1/24"},
                    {"interface":2,"address":"10.9.0.5/24","gateway":"10.9.0.1"}],"dns":{}}
            """
        let r = try CNIResult.parse(Array(text.utf8), plugin: "bridge")
        #expect(r.cniVersion == "1.0.0")
        #expect(r.ips.count == 3)
        #expect(r.ips[2].gateway == "10.9.0.1")
        #expect(r.interfaces.map(\.name) == ["cni0", "veth1", "eth0"])
        #expect(r.interfaces[2].sandbox == "/run/netns/x")
        #expect(r.podIPs == ["10.9.0.5", "fd00::5"])
    }

    @Test func legacyResultWithIP4() throws {
        let r = try CNIResult.parse(Array(#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.2.3/16","gateway":"10.1.0.1"},"dns":{}}"#.utf8), plugin: "old")
        #expect(r.podIPs == ["10.1.2.3"])
        #expect(r.ips[0].gateway == "10.1.0.1")
    }

    @Test(arguments: ["nope", "[1]", #"{"ips":[{"address":"10.0.0.1"}]}"#, #"{"ip4":{}}"#])
    func invalidResultsNameThePlugin(text: String) {
        #expect {
            _ = try CNIResult.parse(Array(text.utf8), plugin: "weird")
        } throws: { error in
            let e = error as? NetworkError
            return e?.code == .invalidResult && e?.plugin == "weird" && e!.message.contains("CNI plugin weird")
        }
    }
}
