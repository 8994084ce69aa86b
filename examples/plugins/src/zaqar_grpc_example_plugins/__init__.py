"""An example of zaqar-grpc plugins: a message store and a message filter."""
