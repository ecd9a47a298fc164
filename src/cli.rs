//! Command-line definitions of the three daemons (clap), shared by the binaries and man pages.
