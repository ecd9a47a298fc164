# faas executor loader: runs the executor script received on the control socket (fd in argv[1]).
import socket,sys,types
s=socket.socket(fileno=int(sys.argv[1]))
n=int.from_bytes(s.recv(4,socket.MSG_WAITALL),'big')
b=s.recv(n,socket.MSG_WAITALL)
m=types.ModuleType('faas_executor')
m.__file__='faas_executor.py'
sys.modules[m.__name__]=m
exec(compile(b,m.__file__,'exec'),m.__dict__)
sys.exit(m.main(s))
