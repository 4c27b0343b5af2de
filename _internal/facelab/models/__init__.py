"""Networks (nn.Modules) and their registry: SAEHD, Quick96 (and XSeg with its issue)."""
