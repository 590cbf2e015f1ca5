from wsitranscode.cli import main

raise SystemExit(main())
