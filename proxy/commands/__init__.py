"""What ``gar-proxy`` does, one module per command: ``serve``, ``warm``, ``gc``,
``verify``, ``push_layout``. ``proxy.cli`` parses arguments and calls them; each
builds what it needs through the one composition root,
``proxy.services.container.open_services``, as the server does."""
