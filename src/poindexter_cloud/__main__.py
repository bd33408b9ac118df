from poindexter_cloud.cli import main

raise SystemExit(main())
