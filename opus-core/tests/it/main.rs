//! Integration tests of opus-core against real services started by the test.

mod s3;
