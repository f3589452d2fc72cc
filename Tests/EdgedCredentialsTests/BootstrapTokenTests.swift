import EdgedCredentials
import Testing

@Suite struct BootstrapTokenTests {
    @Test func parsesIdAndSecret() throws {
        let token = try BootstrapToken(parsing: "abcdef.0123456789abcdef\n")
        #expect(token.id == "abcdef")
        #expect(token.secret == "0123456789abcdef")
        #expect(token.bearerToken == "abcdef.0123456789abcdef")
        #expect(!"\(token)".contains("0123456789abcdef"))
    }

    @Test(arguments: ["", "abcdef", "abcdef.", "abcde.0123456789abcdef", "abcdef.0123456789abcde", "ABCDEF.0123456789abcdef",
                      "abcdef.0123456789abcdeF", "abcdef:0123456789abcdef", "abcdef.0123456789abcdef.x", "abc-ef.0123456789abcdef"])
    func rejectsMalformedTokens(text: String) {
        let error = #expect(throws: CredentialError.self) { try BootstrapToken(parsing: text) }
        #expect(error?.code == .invalidToken)
        #expect(error?.message.contains("expected the form [a-z0-9]{6}.[a-z0-9]{16}") == true)
        // The secret part is never echoed back.
        if text.count > 7 { #expect(error?.message.contains(String(text.dropFirst(7))) == false) }
    }
}
