from pygw.cli import main

raise SystemExit(main())
