//! Cortex QUIC transport with mutual TLS, the protocol handshake, lanes and batching.
