"""Reading and keying: datasets streamed as rows, rows made requests, each request's exact key and token count."""
