//! The one TLS crypto provider of every HTTPS client the service makes (its own, the MCP
//! SDK's, the MongoDB driver's): rustls on *ring*, which the MongoDB driver brings anyway.
//! reqwest is built without a provider of its own, which would be a second crypto library
//! (aws-lc, a C build of half a minute on every clean build), so the process's default is
//! set before the first client is built: [`client`] does it, and so does anything that
//! lets a library build one.

/// Sets *ring* as the process's rustls provider, once; later calls do nothing. A provider
/// installed first by a program that embeds the service stays, and is used.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder, the provider installed: every HTTP client starts here.
pub fn client() -> reqwest::ClientBuilder {
    install();
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_built_here_has_the_provider_installed() {
        // reqwest without a provider of its own panics building a client when none is set.
        super::client().build().unwrap();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
