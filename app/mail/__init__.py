"""Email: the kinds of message and their templates (`messages`), the backends that deliver
them (`senders`) and the outbox relay (`relay`). Requests add messages to the outbox with
`app.services.mail.enqueue`."""
