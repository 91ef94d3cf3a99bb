"""Mailbox providers behind one interface (worker.sync.base) and the engine that drives them."""
