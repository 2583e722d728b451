package ubus

// Builders of the messages the client and server send, for the byte-exact trace tests.
var (
	LookupMessage    = lookupMessage
	InvokeMessage    = invokeMessage
	AddObjectMessage = addObjectMessage
	ReplyMessages    = replyMessages
	ParseSignature   = parseSignature
)
