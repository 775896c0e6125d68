// TODO: being written.
