"""invad backend plugin for HIPS autograd: every op an autograd primitive, to any order."""
