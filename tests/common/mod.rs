pub mod hook;
pub mod sim;
