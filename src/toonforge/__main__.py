from toonforge.cli.main import main

raise SystemExit(main())
