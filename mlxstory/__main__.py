from mlxstory.cli import main

main()
